"""Running one notebook in a worker process: warm kernels, nbclient hooks into Events, the HTML report."""

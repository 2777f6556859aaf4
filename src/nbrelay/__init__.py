"""nbrelay: run Jupyter notebooks as background jobs, with live loss-free push to the browser."""

__version__ = "0.1.0"

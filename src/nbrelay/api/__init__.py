"""HTTP routes only: each module turns requests into service calls and results into JSON."""

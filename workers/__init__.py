"""The processes that run jobs: the worker node and its pool of child processes."""

"""The PostgreSQL backend (issue 15), in progress: ``sql`` holds its statements."""

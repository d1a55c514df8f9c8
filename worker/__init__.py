"""RQ workers: render, send and scheduled runs (the sending issue builds them here)."""

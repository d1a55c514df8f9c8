"""Public landing pages and their form submissions."""

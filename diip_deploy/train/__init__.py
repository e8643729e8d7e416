"""Training of the shipped default prior (torch side; not needed at run time)."""

"""The TA review web app."""

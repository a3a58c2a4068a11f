"""Fault injection and sample data: fault points, the generator of REES46-style events."""

"""Results -> pandas -> tables and plots."""

"""One simulated peripheral per medical profile."""

"""Verification evaluation: the LFW/CFP-FP/AgeDB-30 protocol, embedding with flips, benchmark validation."""

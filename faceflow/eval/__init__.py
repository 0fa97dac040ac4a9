"""Evaluation: the verification protocol (LFW/CFP-FP/AgeDB-30) with flip embeddings, benchmark validation, and IJB-B/IJB-C 1:1 and 1:N."""

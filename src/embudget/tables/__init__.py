"""Embedding tables whose rows have their own sizes: the masked form (one d_max-wide table, a
prefix per row) and the compact form (one flat values tensor plus offsets)."""

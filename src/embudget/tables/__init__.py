"""Embedding tables whose rows have their own sizes: the masked form (one d_max-wide table, a
prefix per row), the compact form (one flat values tensor plus offsets), and
:class:`~embudget.tables.budgeted.BudgetedEmbedding`, the public drop-in for
``nn.Embedding`` built on the compact form."""

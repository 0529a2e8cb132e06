"""From a resolved config to a finished run directory: pretrain, propose sizes, retrain, test,
write."""

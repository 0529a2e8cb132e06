"""Training and measuring: BPR fitting with early stopping, fine-tuning, full-ranking evaluation
and the metrics."""

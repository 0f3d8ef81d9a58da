"""Stage three's training: the loop, the tasks, the metrics and the checkpoints."""

"""What a run writes: the run folder, checkpoints, TensorBoard, pictures, atomic writes."""

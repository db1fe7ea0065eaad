"""Models: one resolver for every model spec, weight files, layers and summaries, Sensiscope's own
architectures and image-model training."""

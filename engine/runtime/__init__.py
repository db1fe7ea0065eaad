"""Running on a device: device selection and description, memory figures, batching with a memory
budget and out-of-memory halving."""

"""Domain values and pricing: what a call consumed and what it costs. No AWS, no HTTP."""

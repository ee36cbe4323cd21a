"""Meter Amazon Bedrock calls and apportion their cost to the principals who make them."""

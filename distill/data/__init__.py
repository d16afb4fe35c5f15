"""Distillation data: prepared face sets, near-duplicate exclusion, masked training samples."""

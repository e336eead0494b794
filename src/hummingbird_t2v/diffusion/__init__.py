"""Noise schedules and samplers as plain functions over a denoiser callable."""

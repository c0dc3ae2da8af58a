"""Runtimes start one attempt of an execution somewhere (local Docker, AWS Batch) and wait for it."""

from granary_flows.runtimes.base import Attempt, AttemptOutcome, Runtime

__all__ = ["Attempt", "AttemptOutcome", "Runtime"]

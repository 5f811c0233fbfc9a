"""Online defence: a gateway in front of a model that records, scores and acts.

`distillguard gateway --upstream URL` serves OpenAI-compatible (chat completions,
responses) and Anthropic-compatible (messages) APIs, passes every request to the
upstream (streams as they come), records each exchange in the canonical schema, keeps
per-account state, and applies a policy: allow, throttle, withhold reasoning, mark,
require step-up verification, or block, each decision logged with its reason.
"""

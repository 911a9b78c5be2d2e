"""Whether the notebook needed the Keras 2 → 3 bridge (grader/kernel/keras2_bridge.py).

Not part of 課題8's score: the bridge runs the old API and the notes teach what to write instead.
A spec that wants modern Keras to count lists a check of this kind with the points it is worth.
"""

from __future__ import annotations

from grader.checks import CheckContext, Observation, kind, verdict
from grader.compat_notes import bridged_apis


@kind("keras3_api")
def keras3_api(ctx: CheckContext) -> Observation:
    """No removed Keras 2 API had to be bridged (`fit_generator`, `lr=`, `np_utils`, …)."""
    used = bridged_apis(ctx.student)
    return verdict(not used, used or [], [], "keras2_api_used", apis=", ".join(used))

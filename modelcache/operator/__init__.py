"""The kopf operator: ModelVersion -> NodeCache, over a pure rollout planner."""

"""The Kubernetes executor's parts: ``manifest`` (the Job), ``api`` (the one door to the API server), ``watch``
(one pod watch per dispatcher), ``podstate`` (what a pod's status means), ``podlogs`` (a step's live log) and
``executor`` (following one job from create to delete)."""

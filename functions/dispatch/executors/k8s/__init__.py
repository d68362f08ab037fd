"""The Kubernetes executor's parts: ``manifest`` (the Job), ``api`` (the one door to the API server), ``watch``
(one pod watch per dispatcher), ``podstate`` (what a pod's status means), ``podlogs`` (a step's live log),
``progress`` (a pod's states turned into the job's steps) and ``executor`` (one job's Job from create to delete)."""

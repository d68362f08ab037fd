"""A job's results: the files and JUnit reports it asked to keep, collected after its last step.

``collector`` reads /shared as tar streams into the Object Store and parses the reports (``junit``);
``docker_volume`` and ``k8s_collect`` hand it those streams on each executor; ``outcome`` is the wire shape
that travels in the terminal event to the record.
"""

"""submit: validate a job, store it in JetStream, answer 202 with its id."""

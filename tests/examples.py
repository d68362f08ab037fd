"""The exact errors the server gives for each invalid example in ``schemas/examples/invalid``."""

INVALID_EXPECTED = {
    "unknown-field.json": [
        {
            "path": "/steps/0/memroy_limit",
            "message": "unknown field; allowed fields: continue_on_error, cpu_limit, id, image, memory_limit, "
            "memory_swap, metadata, name, network, pids_limit, script",
        }
    ],
    "missing-steps.json": [{"path": "/steps", "message": "is required"}],
    "bad-memory.json": [
        {
            "path": "/steps/0/memory_limit",
            "message": "must be a memory size such as 512M or 2G (binary units: K, M, G, T; a bare number is bytes)",
        }
    ],
    "swap-below-memory.json": [{"path": "/steps/0/memory_swap", "message": "must be at least memory_limit"}],
    "duplicate-step-ids.json": [{"path": "/steps/1/id", "message": "duplicates the id of /steps/0"}],
    "bad-metadata-key.json": [
        {
            "path": "/metadata/1ST-KEY",
            "message": "is not a valid environment variable name (letters, digits and _, not starting with a digit, "
            "at most 128 characters)",
        }
    ],
    "bad-callback-url.json": [{"path": "/callback_url", "message": "must be an absolute http:// or https:// URL"}],
    "many-problems.json": [
        {"path": "/name", "message": "must be at least 1 characters long"},
        {"path": "/priority", "message": "must be of type integer"},
        {"path": "/steps/0/cpu_limit", "message": "must be at least 0.01"},
        {"path": "/steps/0/id", "message": "must be at least 1"},
    ],
}

"""Training losses, one module per concept; :mod:`.terms` names the terms a configuration weights."""

"""Runtime helpers shared by the engines: atomic writes, seeding, devices, distributed."""

"""Emulated hardware devices that real backends connect to through their unmodified hardware libraries
(``make_hardware(..., emulate=True)``, ``molmoact2-ros demo --hardware emulated``). Each module here is one
device family's emulator; it runs in the backend's own process, in a thread."""

"""The whole service on one machine: emulated AWS, the real handlers, state machine and trainer."""

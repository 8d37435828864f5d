"""kiosk: offline face verification for SIM-registration kiosks, keeping nothing biometric."""

__version__ = "0.1.0"

"""Simulated BLE medical-device firmware (bumble GATT peripherals)."""

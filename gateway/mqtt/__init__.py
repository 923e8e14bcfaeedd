"""The MQTT source: 5G/cellular devices publish SenML frames; the gateway acknowledges after COMMIT."""

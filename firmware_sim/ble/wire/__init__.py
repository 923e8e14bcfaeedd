"""Pure encoders for the BLE characteristics of ``protocols.md`` §1–§8 (bytes out, no I/O).

Written from the protocol reference only — never from the gateway's decoders — so that the two
implementations check each other. Every multi-octet field is little-endian.
"""

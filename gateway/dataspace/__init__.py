"""The dataspace link: patients and consent, pseudonyms, the research path and its FHIR endpoint (docs/consent.md)."""

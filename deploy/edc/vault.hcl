# HashiCorp Vault for the worked example (not run here): file storage, TLS terminated elsewhere.
storage "file" {
  path = "/vault/file"
}
listener "tcp" {
  address     = "0.0.0.0:8200"
  tls_disable = true   # only on the compose network; never publish this port
}
ui = false

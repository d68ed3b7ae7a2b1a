{
  "targets": [
    {
      "target_name": "content_gcm",
      "sources": ["native/content_gcm.c"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Werror"],
      "defines": ["NAPI_VERSION=9"]
    }
  ]
}

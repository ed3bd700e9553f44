//! HTTP/1.1 client over a unix socket (to be written).

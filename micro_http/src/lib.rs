//! HTTP/1.1 server over a unix socket (to be written).

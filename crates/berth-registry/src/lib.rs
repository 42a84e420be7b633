//! OCI distribution client for berth: resolve, pull, push, auth.
//!
//! Streams blobs straight into the berth-image content store while hashing, pulls
//! layers in parallel, resumes, retries, and reads docker credentials. It does not
//! unpack layers itself (berth-image does) nor run containers.

//! Container networking for berth: bridges, veth pairs, IPAM, port publishing and
//! name resolution between containers on user networks.
//!
//! It sets up and tears down network namespaces' links and the host rules for them;
//! it does not create containers.

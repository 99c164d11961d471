//! Black-box tests of several gateway processes sharing one Redis (or a Redis Cluster), all on
//! 127.0.0.1: chat across nodes, races across nodes, and the faults a deployment meets (a
//! node killed, a node drained, Redis restarted). Built as an integration test of the gateway
//! package so that cargo builds the very binary under test first.

mod archive;
mod directory;
mod faults;
mod harness;
mod hostile;
mod multinode;
mod notify;
mod observability;
mod restart;
mod rules;

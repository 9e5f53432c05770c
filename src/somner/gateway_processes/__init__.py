"""`workers` above 1: several gateway processes serving one port.

`somner serve --workers N` becomes a supervisor (`supervisor`): it checks that the configuration can be shared
(limits in Redis), does the start-up work that must not race (migrations, the first admin key) once, then starts
N gateway processes (`child`), each the ordinary app on its own event loop, restarts any that dies, and drains
them all on SIGTERM/SIGINT.

How connections are spread: every gateway process binds its own listening socket with SO_REUSEPORT
(`listening`), and the kernel hashes each new connection onto one of them. The alternative, one socket bound by
the supervisor and inherited, balances badly under uvloop: every process waits on the same socket, the one that
wakes first accepts everything queued (libuv accepts until the backlog is empty), so a burst of connections, and
with keep-alive all their later requests, lands on one process while the others idle. With SO_REUSEPORT the
spread is even whatever the timing. The costs, accepted: connections still waiting in the accept queue of a
process that dies are reset (those it had accepted die with it either way), and the kernel would also let another
server of the same user join the port, which the supervisor rules out by checking the port is free before it
starts any process.
"""

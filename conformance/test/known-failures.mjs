// Protocol cases the server is known to fail, each the reason of a `todo` test: the test
// still runs and prints its failure (`# TODO` in the output) without failing the suite.
// When one starts to pass, remove its entry and the `todo` that uses it. (The first-PING
// timing and v3 polling binary framing cases passed once vendor/engineioxide fixed them.)

export const KNOWN = {
  socketIdIsEngineSid:
    'socketioxide 0.18 gives a Socket.IO socket (on every namespace) the Engine.IO session ' +
    'id as its id; protocol v5 makes them differ, so that a socket id, which apps share, ' +
    'never lets anyone else poll or post on the Engine.IO session. QuckChat keeps socket ' +
    'ids to itself (they are internal device ids), so nothing leaks today. Needs socketioxide.',
};

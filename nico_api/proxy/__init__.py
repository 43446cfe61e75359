"""`nico-api proxy`: a validating proxy that forwards a client's requests to a NICo server and
checks each exchange against openapi.yaml and the NICo rules one exchange can decide.

contract.py decides what an exchange broke; app.py forwards and reports; tally.py counts what
was seen, for the summary and the JUnit file.
"""

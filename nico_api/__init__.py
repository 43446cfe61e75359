"""A spec-first implementation of the NICo REST API's Task resource."""

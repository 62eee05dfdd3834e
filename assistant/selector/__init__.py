"""The Plugin-Selector: which plugins a request asks for, or none ("out of scope")."""

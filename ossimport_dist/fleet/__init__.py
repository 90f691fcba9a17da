"""The fleet: what the master needs to run a job on worker hosts over SSH.

``hosts`` reads workers.txt, ``ssh`` is the one module that speaks SSH, ``deploy`` installs the
package on a host from wheels the master carries, ``sshlink`` is the tracker's link to a host
(and the agent's start/stop commands), ``dispatcher`` the master's tracker over those links, and
``agent`` the process that runs the tasks on each host.
"""

"""Article 8796's inequality between the input and the parameter gradient penalty on MLPs:
the check (check), the training experiment (experiment), the report (report) and `genexp inequality` (command)."""

\set id random(1, 1000)
SELECT name, phone, id_card FROM customers WHERE id = :id;
